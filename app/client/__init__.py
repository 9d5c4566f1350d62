"""``dwasm modules|flows|queues|cluster ...``: a command-line client of the dwasm REST API.

Each subcommand is one or a few synchronous HTTP requests (httpx) to the service named by
``--url`` / ``DWASM_URL``, with ``--token`` / ``DWASM_TOKEN`` as a bearer token. Output is for
people by default (aligned fields, tables, one line per event) and the API's JSON with
``--json``, so that scripts never have to parse the human form.

Failures are one ``error:`` line on stderr and an exit status of their class: 2 usage, 3 a file
that cannot be read, 7 the service (a problem+json answer, or no answer at all), 130 Ctrl-C.
``flows start --wait`` ends with the flow's own exit code, or
:data:`~app.client.errors.EXIT_FLOW_FAILED`, :data:`~app.client.errors.EXIT_FLOW_CANCELLED` or
:data:`~app.client.errors.EXIT_WAIT_TIMEOUT`. httpx is imported only when a command runs, so
``dwasm run`` does not need it.

The modules, lowest first: :mod:`.errors` (the exit statuses and the error every command
raises), :mod:`.api` (HTTP to the service), :mod:`.output` and :mod:`.inputs` (what all
commands print and read), one module per resource (:mod:`.modules`, :mod:`.flows`,
:mod:`.queues`, :mod:`.cluster`), and :mod:`.commands`, which wires them into argparse
(:func:`~app.client.commands.add_client_commands`, used by ``app/cli.py``).
"""
