"""The AWS emulator under the dev stack: DynamoDB as atomic as the service while reads and writes interleave, and
requests dispatched without touching the disk."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import moto
import pytest
from botocore.config import Config

from batchgw import emulator
from tests.fakes.servers import aws_emulator

TABLE = "emulator-race"


def test_reads_of_missing_items_never_break_a_concurrent_transaction() -> None:
    # moto's get_item of an absent partition inserts an empty one, and a transaction deep-copies the table:
    # unserialized, a read during the copy answers the writer 500 ("dictionary changed size during iteration")
    with aws_emulator() as aws:
        client = boto3.client(
            "dynamodb",
            endpoint_url=aws["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}, max_pool_connections=8),
        )
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        try:
            writing = threading.Event()
            writing.set()

            def read(n: int) -> int:
                reads = 0
                while writing.is_set() and reads < 3000:
                    key = {"pk": {"S": f"absent-{n}-{reads}"}, "sk": {"S": "x"}}
                    client.get_item(TableName=TABLE, Key=key)
                    client.query(
                        TableName=TABLE,
                        KeyConditionExpression="pk = :p",
                        ExpressionAttributeValues={":p": {"S": f"absent-{n}-{reads}"}},
                    )
                    reads += 1
                return reads

            def write() -> None:
                try:
                    for n in range(150):
                        item = {"pk": {"S": f"item-{n}"}, "sk": {"S": "x"}}
                        client.transact_write_items(TransactItems=[{"Put": {"TableName": TABLE, "Item": item}}])
                finally:
                    writing.clear()

            with ThreadPoolExecutor(max_workers=4) as pool:
                readers = [pool.submit(read, n) for n in range(3)]
                pool.submit(write).result()
                assert all(r.result() > 0 for r in readers)
            assert client.scan(TableName=TABLE, Select="COUNT")["Count"] == 150
        finally:
            client.delete_table(TableName=TABLE)


def test_a_request_does_not_list_motos_package_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto's server finds each request's service by listing its own package directory (one listdir and a
    # stat per service) while holding its one dispatch lock: under load, every request of the dev stack
    # queued behind those system calls (45 batches took 71 s to complete through batchgw dev, 59 s without)
    package = os.path.dirname(moto.__file__)
    listings: list[str] = []
    listdir = os.listdir

    def counting(path: str = ".") -> list[str]:
        if os.fspath(path) == package:
            listings.append(path)
        return listdir(path)

    with aws_emulator() as aws:
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        sqs = boto3.client("sqs")
        sqs.list_queues()  # the first loads the service's model, once
        monkeypatch.setattr(os, "listdir", counting)
        for _ in range(5):
            sqs.list_queues()
    assert listings == []


def test_an_item_written_while_others_read_and_update_it_never_breaks_their_answers() -> None:
    # moto answers an update by deep-copying the stored item, and a read by listing its attributes, outside
    # the lock its writes hold: a concurrent update adding an attribute broke them ("dictionary changed size
    # during iteration"), a 500 where DynamoDB answers (two concurrent uploads' parts, one failed)
    emulator.atomic_dynamodb()
    with moto.mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}))
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        item_key = {"pk": {"S": "one"}}
        client.put_item(TableName=TABLE, Item={**item_key, **{f"a{n}": {"S": "x" * 50} for n in range(100)}})

        def update(worker: int) -> None:
            for n in range(100):
                client.update_item(
                    TableName=TABLE,
                    Key=item_key,
                    UpdateExpression="SET #new = :v REMOVE #old",
                    ExpressionAttributeNames={"#new": f"w{worker}_{n}", "#old": f"w{worker}_{n - 1}"},
                    ExpressionAttributeValues={":v": {"M": {f"k{i}": {"S": "y"} for i in range(20)}}},
                    ReturnValues="UPDATED_OLD",
                )

        def read(_: int) -> None:
            for _ in range(100):
                client.get_item(TableName=TABLE, Key=item_key, ConsistentRead=True)
                client.batch_get_item(RequestItems={TABLE: {"Keys": [item_key], "ConsistentRead": True}})

        with ThreadPoolExecutor(max_workers=4) as pool:
            done = [pool.submit(update, 0), pool.submit(update, 1), pool.submit(read, 0), pool.submit(read, 1)]
            for future in done:
                future.result()
