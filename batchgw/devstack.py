"""`batchgw dev`: the whole stack in one process, on loopback, with no AWS account and no Docker.

- an AWS emulator (moto's server, 127.0.0.1 only), or whatever `AWS_ENDPOINT_URL` points at, holding the
  table, bucket, event bus and rules that template.yaml declares, created from its own definitions;
- the HTTP API: each request goes to the ASGI app of the function whose HttpApi route matches it in
  the template, as API Gateway would route it to that Lambda;
- EventBridge delivery: each EventBridgeRule of the template becomes a rule on the emulated bus with an
  SQS queue as target, and a worker invokes the function's real handler with each event it receives
  (a failed invocation is retried, then dead-lettered, like Lambda's async retries);
- SQS event sources: each queue is created with the template's attributes (a FIFO queue stays FIFO, so its
  message groups hold as in AWS), and as many workers as the event source's MaximumConcurrency (at most
  DEV_MAX_DELIVERIES) invoke the function's handler with BatchSize messages at a time;
- the schedule: the poller's real handler is invoked with a real scheduled event every `poll_interval`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final

import boto3
import orjson
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from botocore.exceptions import ClientError
from starlette.types import ASGIApp, Receive, Scope, Send

from batchgw import emulator, template
from shared.http.app import error_response
from shared.runtime import reset_runtime

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

logger = logging.getLogger("batchgw.dev")

DEV_MASTER_KEY = "sk-batchgw-dev"
REGION = "us-east-1"
_VISIBILITY_SECONDS = 5
# how long a standard queue's receive waits for a message (a long poll: it answers as soon as one arrives)
_LONG_POLL_SECONDS = 5
# how long a FIFO queue's delivery worker waits after finding nothing (it does not long-poll: DevQueue), doubling
# while the queue stays empty up to a long poll's length: each of up to DEV_MAX_DELIVERIES workers asking five
# times a second kept an idle dev stack and its emulator at 78% of a core
_FIFO_IDLE_SECONDS = 0.2
_FIFO_IDLE_MAX_SECONDS = _LONG_POLL_SECONDS
_MAX_RECEIVES = 3
# the most delivery workers one SQS event source gets in the dev stack, whatever its MaximumConcurrency
DEV_MAX_DELIVERIES = 16
# the queue attributes of the template that the dev stack's queues take
_QUEUE_ATTRIBUTES: Final[tuple[QueueAttributeNameType, ...]] = (
    "FifoQueue",
    "ContentBasedDeduplication",
    "VisibilityTimeout",
)

type Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True, slots=True)
class StackNames:
    table: str = "batchgw-dev"
    bucket: str = "batchgw-dev"
    bus: str = "batchgw-dev"


class LambdaContext:
    """What a Lambda handler's `context` argument offers, for handlers invoked locally."""

    def __init__(self, function_name: str, timeout_seconds: float = 900) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:000000000000:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self.client_context: Any = None
        self.identity: Any = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def import_handler(dotted: str) -> Handler:
    module_name, _, attribute = dotted.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module_name), attribute)
    return handler


class _InFlight:
    """The invocations running in this process. Nothing flushes metrics that are off, and the functions'
    metrics share one set in a process: left alone they pile up until Powertools prints and empties them at
    a metric's 100th value, in the middle of some invocation, whose own flush then finds nothing and warns.
    So the set is emptied whenever no invocation is running (never under one that is)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        with self._lock:
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                if not self._count and is_metrics_disabled():
                    Metrics().clear_metrics()


_IN_FLIGHT: Final = _InFlight()


def invoke(function: template.Function, event: dict[str, Any], context: LambdaContext | None = None) -> Any:
    """Invoke a function's real handler with `event`, as Lambda would."""
    context = context or LambdaContext(function.logical_id)
    with _IN_FLIGHT.one(), logged_as(context):
        return import_handler(function.handler)(event, context)


def deliver(function: template.Function, event: dict[str, Any], *, then: str = "") -> bool:
    """Invoke `function` with `event`; False when it failed, logged (with `then`, what happens next) in the
    invocation's name: past its end, a record would take whichever function set Powertools' keys last."""
    context = LambdaContext(function.logical_id)
    try:
        invoke(function, event, context)
    except Exception:
        with logged_as(context):
            logger.exception("%s failed%s", function.logical_id, then)
        return False
    return True


_LOGGED_AS: Final[ContextVar[dict[str, Any] | None]] = ContextVar("batchgw_dev_logged_as", default=None)


@contextlib.contextmanager
def logged_as(context: LambdaContext) -> Iterator[None]:
    """Name `context`'s function on the log lines made in this context (its thread, and the threads asyncio
    hands its work to) while it runs. Powertools keeps a function's context keys for the whole process, as
    Lambda runs one invocation per process; here invocations of every function run at once and overwrite
    each other's, so each record also carries its own as attributes, which Powertools' formatter puts last."""
    _name_records()
    token = _LOGGED_AS.set(vars(build_lambda_context_model(context)))  # the keys Powertools itself adds
    try:
        yield
    finally:
        _LOGGED_AS.reset(token)


def _name_records() -> None:
    """Make every log record of this process carry the keys `logged_as` set in its context (once)."""
    global _naming
    with _naming_lock:
        if _naming:
            return
        make = logging.getLogRecordFactory()

        def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            made = make(*args, **kwargs)
            made.__dict__.update(_LOGGED_AS.get() or {})
            return made

        logging.setLogRecordFactory(record)
        _naming = True


_naming = False
_naming_lock = threading.Lock()


def scheduled_event(now: datetime | None = None) -> dict[str, Any]:
    """An EventBridge scheduled event, as the poller receives it in AWS."""
    at = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": at,
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:000000000000:rule/batchgw-dev-poll"],
        "detail": {},
    }


def sqs_event(message: Mapping[str, Any], queue_url: str) -> dict[str, Any]:
    """The event an SQS event source mapping invokes a function with, for one message."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:000000000000:{queue_url.rsplit('/', 1)[-1]}",
                "awsRegion": REGION,
            }
        ]
    }


class DevQueue:
    """Receiving from and deleting on one queue of the emulator, as Lambda's event source would.

    A FIFO queue is read one call at a time across the process, without long polling: moto's receive is not
    atomic across concurrent callers, and a long poll keeps the view of the groups in flight it started
    with, either of which would hand out a second message of a group while one is in flight.
    """

    _fifo_locks: ClassVar[dict[str, threading.Lock]] = {}
    _locks_lock: ClassVar = threading.Lock()

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self.url = queue_url
        self.fifo = queue_url.endswith(".fifo")
        with self._locks_lock:
            self._lock = self._fifo_locks.setdefault(queue_url, threading.Lock()) if self.fifo else None

    def receive(self, count: int) -> list[dict[str, Any]]:
        if self._lock is None:
            answer = self._sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=count, WaitTimeSeconds=_LONG_POLL_SECONDS
            )
        else:
            with self._lock:
                answer = self._sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=count)
        return [dict(message) for message in answer.get("Messages", [])]

    def delete(self, message: Mapping[str, Any]) -> None:
        if self._lock is None:
            self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            return
        with self._lock:
            self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])


class ApiGateway:
    """An ASGI app that routes each request to the app of the function whose HttpApi route matches."""

    def __init__(self, functions: list[template.Function]) -> None:
        self._routes: list[tuple[str, Any, ASGIApp, str]] = []
        apps: dict[str, ASGIApp] = {}
        for function in functions:
            for _, props in function.events_of("HttpApi"):
                module = function.handler.rpartition(".")[0]
                if module not in apps:
                    apps[module] = importlib.import_module(module).app
                pattern = template.route_pattern(props["Path"])
                self._routes.append((props["Method"].upper(), pattern, apps[module], function.logical_id))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the function apps run with lifespan off, as under Mangum
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path, method = scope["path"], scope["method"].upper()
        for route_method, pattern, app, function_name in self._routes:
            if route_method == method and pattern.match(path):
                with logged_as(LambdaContext(function_name)):  # this request's task and the threads it uses
                    await app(scope, receive, send)
                return
        from starlette.requests import Request

        request = Request(scope, receive)
        response = error_response(
            request, 404, f"Unknown request URL: {method} {path}.", type_="invalid_request_error", code="unknown_url"
        )
        response.headers["x-request-id"] = f"req_{uuid.uuid4().hex[:24]}"
        await response(scope, receive, send)


@dataclass
class DevStack:
    """The emulated AWS side of the stack and the workers that stand in for Lambda's triggers."""

    config: str
    poll_interval: float = 5.0
    names: StackNames = field(default_factory=StackNames)
    _moto: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _session: boto3.session.Session | None = None

    def start_emulator(self) -> str:
        """Use AWS_ENDPOINT_URL if set, else start moto's server on 127.0.0.1; returns the endpoint."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if not endpoint:
            self._moto, endpoint = emulator.start_server()
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
        return endpoint

    def configure(self) -> None:
        """Point the handlers at this stack (environment read by shared.settings)."""
        os.environ.update(
            {
                "BATCHGW_TABLE": self.names.table,
                "BATCHGW_BUCKET": self.names.bucket,
                "BATCHGW_EVENT_BUS": self.names.bus,
                "BATCHGW_CONFIG": self.config,
            }
        )
        os.environ.setdefault("BATCHGW_MASTER_KEY", DEV_MASTER_KEY)
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
        reset_runtime()

    def provision(self) -> dict[str, str]:
        """Create the table, bucket, bus, rules and queues of template.yaml; returns each function's delivery
        queue URLs (its EventBridge rules' and its SQS event sources'), keyed `function` and `function:SQS`."""
        session = self._aws()
        dynamodb, s3 = session.client("dynamodb"), session.client("s3")
        events, sqs = session.client("events"), session.client("sqs")
        with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
            dynamodb.create_table(**template.table_definition(self.names.table))
        ttl = template.ttl_attribute()
        if ttl:
            with contextlib.suppress(ClientError):
                dynamodb.update_time_to_live(
                    TableName=self.names.table,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl},
                )
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            s3.create_bucket(Bucket=self.names.bucket)
        with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
            events.create_event_bus(Name=self.names.bus)
        dlq = sqs.create_queue(QueueName=f"{self.names.bus}-failed")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queues: dict[str, str] = {}
        for function in template.functions():
            for name, props in function.events_of("EventBridgeRule"):
                queue = sqs.create_queue(
                    QueueName=f"{self.names.bus}-{function.logical_id}-{name}",
                    Attributes={
                        "VisibilityTimeout": str(_VISIBILITY_SECONDS),
                        "RedrivePolicy": orjson.dumps(
                            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(_MAX_RECEIVES)}
                        ).decode(),
                    },
                )["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                rule = f"{function.logical_id}-{name}"
                events.put_rule(
                    Name=rule,
                    EventBusName=self.names.bus,
                    EventPattern=orjson.dumps(props["Pattern"]).decode(),
                )
                events.put_targets(Rule=rule, EventBusName=self.names.bus, Targets=[{"Id": "dev", "Arn": arn}])
                queues[function.logical_id] = queue
            for _, props in function.events_of("SQS"):
                attribute = props["Queue"]["Fn::GetAtt"]  # `Queue.Arn` (short form) or [Queue, Arn]
                source = attribute.split(".", 1)[0] if isinstance(attribute, str) else attribute[0]
                declared = template.resource(source)["Properties"]
                attributes: dict[QueueAttributeNameType, str] = {
                    name: str(declared[name]).lower() if isinstance(declared[name], bool) else str(declared[name])
                    for name in _QUEUE_ATTRIBUTES
                    if name in declared
                }
                suffix = ".fifo" if declared.get("FifoQueue") else ""
                queue = sqs.create_queue(QueueName=f"{self.names.bus}-{source}{suffix}", Attributes=attributes)[
                    "QueueUrl"
                ]
                queues[f"{function.logical_id}:SQS"] = queue
                # the function reads the queue's URL from the variable whose value is its Ref
                for variable, value in function.environment.items():
                    if value == {"Ref": source}:
                        os.environ[variable] = queue
        return queues

    def _aws(self) -> boto3.session.Session:
        """The one session the stack's own clients come from (made on the calling thread: sessions are not
        thread-safe), so each AWS model and rule set is loaded once, not once per worker."""
        if self._session is None:
            self._session = boto3.session.Session(region_name=os.environ["AWS_DEFAULT_REGION"])
        return self._session

    def _queue(self, url: str) -> DevQueue:
        """A worker's own client of the queue at `url` (its own connections: it long-polls)."""
        return DevQueue(self._aws().client("sqs"), url)

    def start_workers(self, queues: dict[str, str]) -> None:
        """Deliver events to their functions and run the schedule, on background threads."""
        for function in template.functions():
            if function.logical_id in queues:
                queue = self._queue(queues[function.logical_id])
                self._spawn(f"deliver-{function.logical_id}", self._deliver, function, queue)
            if f"{function.logical_id}:SQS" in queues:
                url = queues[f"{function.logical_id}:SQS"]
                for _, props in function.events_of("SQS"):
                    batch_size = int(template.value(props.get("BatchSize", 10)))
                    scaling = props.get("ScalingConfig", {}).get("MaximumConcurrency", 1)
                    for n in range(min(int(template.value(scaling)), DEV_MAX_DELIVERIES)):
                        self._spawn(
                            f"sqs-{function.logical_id}-{n}", self._deliver, function, self._queue(url), batch_size
                        )
            if any(True for _ in function.events_of("ScheduleV2")) or any(True for _ in function.events_of("Schedule")):
                self._spawn(f"schedule-{function.logical_id}", self._schedule, function)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _deliver(self, function: template.Function, queue: DevQueue, sqs_batch_size: int | None = None) -> None:
        """Invoke `function` with each message of `queue`: the message is the event (an EventBridge rule's
        target), or, for an SQS event source (`sqs_batch_size` given), the message wrapped in the event Lambda
        would send, taken `sqs_batch_size` at a time."""
        as_sqs_event = sqs_batch_size is not None
        idle = _FIFO_IDLE_SECONDS
        while not self._stop.is_set():
            try:
                messages = queue.receive(sqs_batch_size or 10)
            except Exception:
                if self._stop.is_set():
                    return
                logger.exception("receiving events failed")
                time.sleep(1)
                continue
            if messages:
                idle = _FIFO_IDLE_SECONDS
            elif queue.fifo:
                self._stop.wait(idle)
                idle = min(idle * 2, _FIFO_IDLE_MAX_SECONDS)
            for message in messages:
                event = sqs_event(message, queue.url) if as_sqs_event else orjson.loads(message["Body"])
                if deliver(function, event, then="; the event will be retried"):
                    queue.delete(message)

    def _schedule(self, function: template.Function) -> None:
        while not self._stop.wait(self.poll_interval):
            deliver(function, scheduled_event())

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._moto is not None:
            self._moto.stop()


class PortUnavailable(Exception):
    """The API's address cannot be listened on (another `batchgw dev` there, most often)."""


def _listen(host: str, port: int) -> socket.socket:
    """The API's socket, bound before anything else starts, so that a port in use fails at once. Its protocol is
    named TCP: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections accepted from such a socket,
    and with it on, uvicorn's answer (headers, then body, two writes) waited out the client's 40 ms delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def serve(*, host: str, port: int, config: str, poll_interval: float, ready: Callable[[str], None]) -> None:
    """Run the dev stack in the foreground until interrupted; PortUnavailable, before anything starts, when
    `host:port` is taken."""
    import uvicorn

    with _listen(host, port) as sock:
        stack = DevStack(config=config, poll_interval=poll_interval)
        try:
            stack.start_emulator()
            stack.configure()
            queues = stack.provision()
            stack.start_workers(queues)
            app = ApiGateway(template.functions())
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
            original_startup = server.startup

            async def startup(sockets: Any = None) -> None:
                await original_startup(sockets)
                ready(f"http://{host}:{port}/v1")

            server.startup = startup  # type: ignore[method-assign]
            server.run(sockets=[sock])
        finally:
            stack.stop()
