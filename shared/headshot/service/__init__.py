"""The Headshot service (`headshot serve`): an asynchronous HTTP API over the core, with durable job records
(SQLAlchemy), a queue (huey) and worker processes that keep the base model loaded.

Nothing here is imported by a host's entry point: FastAPI, SQLAlchemy and huey are the `service` extra.
"""
