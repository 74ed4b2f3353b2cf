"""The usual HTTP Lambda: FastAPI, Mangum and boto3 imported, a client built at import."""

import boto3
from fastapi import FastAPI
from mangum import Mangum

dynamodb = boto3.client("dynamodb")
app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"ok": "yes"}


lambda_handler = Mangum(app)
