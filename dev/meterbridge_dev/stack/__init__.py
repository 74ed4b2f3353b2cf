"""The local stack: moto server, nats-server and the stand-ins behind one FastAPI app."""
