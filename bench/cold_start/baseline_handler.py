"""The usual HTTP Lambda: FastAPI, Mangum and boto3 imported, a client built at import.

Its one route does what a first ``POST /v1/events`` needs at the least: parse the body, read
the caller's key (one ``GetItem``) and write each event with a conditional put, on the table
``BASELINE_TABLE`` (key ``id``) at ``AWS_ENDPOINT_URL``, as the product's usage API reads a
key and writes the events it accepts.
"""

import hashlib
import json
import os

import boto3
from fastapi import FastAPI, Request
from mangum import Mangum

TABLE = os.environ["BASELINE_TABLE"]
dynamodb = boto3.client("dynamodb")
app = FastAPI()


@app.post("/v1/events")
async def post_events(request: Request) -> dict[str, int]:
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    key = hashlib.sha256(token.encode()).hexdigest()
    dynamodb.get_item(TableName=TABLE, Key={"id": {"S": f"key#{key}"}})
    accepted = 0
    for event in json.loads(await request.body()):
        dynamodb.put_item(
            TableName=TABLE,
            Item={"id": {"S": f"event#{event['id']}"}, "body": {"S": json.dumps(event)}},
            ConditionExpression="attribute_not_exists(id)",
        )
        accepted += 1
    return {"accepted": accepted}


lambda_handler = Mangum(app, lifespan="off")
