"""The server (`changeproof serve`): webhook receivers, the REST API and the dashboard.

Web frameworks (FastAPI, uvicorn) are imported only by :mod:`changeproof.web.app` and the
`serve` command, so the rest of changeproof (the gate above all) never pays for them.
"""
