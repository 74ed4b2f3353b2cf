"""The floor: the smallest HTTP Lambda the product's stated stack allows.

FastAPI + Mangum + a botocore DynamoDB client built at import: no boto3, no Powertools, no
settings, no models. Its one route makes the same calls as the baseline's
(``baseline_handler.py``): parse the body, one ``GetItem`` for the caller's key and a
conditional ``PutItem`` per event, on ``BASELINE_TABLE`` at ``AWS_ENDPOINT_URL``. What a
FastAPI + Mangum + botocore handler pays cannot be less than this, so its ratio to the
baseline is the lowest any such handler can reach. The route is the baseline's, line for line,
on purpose: a shared module would change what the baseline imports, and it is not changed.
"""

import hashlib
import json
import os
from typing import Any

import botocore.session
from fastapi import FastAPI, Request
from mangum import Mangum

TABLE = os.environ["BASELINE_TABLE"]
dynamodb: Any = botocore.session.get_session().create_client("dynamodb")
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
