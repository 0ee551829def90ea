"""Load testing the IM gateways: profiles, the Locust runner, SLO verdicts, reports,
capacity search, generator preflight and on-cluster Jobs (``opsctl loadtest``)."""
