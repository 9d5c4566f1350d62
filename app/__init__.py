"""The dwasm command-line tool and, later, the service around the vm/ engine."""
