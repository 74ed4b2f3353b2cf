"""HTTP surfaces: FastAPI routers served by Mangum on Lambda and by uvicorn locally."""
