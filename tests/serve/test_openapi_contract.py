"""The service against its own OpenAPI schema: schemathesis generates requests for every
operation from /openapi.json, schema-valid (positive) and schema-invalid (negative) ones,
streaming answers included, and checks each response against the schema: a valid request is
accepted, an invalid one refused, the status is documented, the body matches, no 5xx. The real
app over the ML-100K slice and SmolLM2. Valid cases leave out the few fields whose validity the
schema cannot state (see STATE_DEPENDENT)."""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import ensure_resource_availability
from serve_support import CONVERSATION_OPTIONS, slice_recommender

from promptrec.recommender import Recommender
from promptrec.serve import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_schema(ml_slice, asset_settings, tmp_path_factory):
    import shutil

    rec = slice_recommender(ml_slice, asset_settings, tmp_path_factory)
    # a copy of the index: the generated writes (POST /events, /items, DELETE /users) go to its
    # own live store and vectors, not to the index the other server tests share
    own = tmp_path_factory.mktemp("contract") / "index"
    shutil.copytree(rec.settings.resolved_index_dir(), own)
    # schemathesis calls the app as http://testserver: that name is trusted here
    trusting = rec.settings.model_copy(update={"index_dir": own, "serve": rec.settings.serve.model_copy(
        update={"allowed_hosts": ["testserver", "localhost"]})})
    items, frame = ml_slice
    served = Recommender.open(items, frame, trusting, "serve-slice")
    served.use_backend(rec.backend)
    app = create_app(served, conversation_options=CONVERSATION_OPTIONS)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


#: Body fields whose validity depends on the server's state, not on the schema: a `where` filter
#: must name the catalog's metadata keys (one that matches no item is a 422 by design), a
#: `template` must be installed, and the letters template labels 26 candidates. Schema-valid
#: cases that set them are left to the explicit tests in test_serve.py.
STATE_DEPENDENT = ("where", "template")


#: The live store's writes: a schema-valid batch writes real events and items (arbitrary metadata
#: keys, any text) into the store and the vectors; they get invalid cases here and their valid
#: ones in test_live_service.py.
WRITES = ("POST /events", "POST /items", "DELETE /users/{user_id}")


def _state_free(case) -> bool:
    if f"{case.method.upper()} {case.path}" in WRITES:
        return False
    body = case.body if isinstance(case.body, dict) else {}
    return not any(body.get(name) is not None for name in STATE_DEPENDENT) and (body.get("n_candidates") or 0) <= 26


def test_every_operation_keeps_its_contract(api_schema):
    """Each operation in turn (its label names it when one fails), a bounded number of cases each."""
    labels = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):
        labels.append(f"{operation.label} ({mode.value})")

        strategy = operation.as_strategy(generation_mode=mode)
        if mode is schemathesis.GenerationMode.POSITIVE:
            strategy = strategy.filter(_state_free)

        @given(case=strategy)
        @settings(max_examples=10, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate()

        try:
            check()
        except Unsatisfiable:  # an operation without inputs has no invalid request to send
            assert mode is schemathesis.GenerationMode.NEGATIVE or operation.label in WRITES, labels[-1]
        except Exception as exc:
            raise AssertionError(f"{labels[-1]}: {exc}") from exc
    assert len(operations) >= 7, labels


def test_conversation_links_keep_their_contract(api_schema, ml_slice):
    """The stateful phase: schemathesis follows the schema's links from a started conversation
    (its answers, why its first suggestion, a follow-up question, its end), with each step's
    response checked like the operations above. Conversations start for a user the slice knows,
    so that the links have something to follow."""
    _, frame = ml_slice
    known_user = str(frame["user_id"].iloc[0])
    seen: list[tuple[str, int]] = []

    api_schema.config.phases.stateful.inference.algorithms = []  # the schema's own links, not guessed ones

    # the live store's writes have no links to follow and take steps away from the conversations
    conversations = api_schema.exclude(path_regex="^/(events|items|users)")

    class Conversations(conversations.as_state_machine()):
        def before_call(self, case):
            valid = case.meta is None or case.meta.generation.mode is schemathesis.GenerationMode.POSITIVE
            if case.operation.label == "POST /conversations" and isinstance(case.body, dict) and valid:
                case.body["user_id"] = known_user

        def after_call(self, response, case):
            super().after_call(response, case)
            seen.append((case.operation.label, response.status_code))

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # A conversation is found only with its own user's id: schemathesis also sends a linked
            # conversation_id with a generated user_id, which is a 404 by design (whether the
            # conversation exists is not told to another user), not a created resource gone missing.
            case.validate_response(response, additional_checks=additional_checks, transport_kwargs=kwargs or None,
                                   excluded_checks=[ensure_resource_availability], recorder=self.recorder)

    Conversations.run(settings=settings(max_examples=20, stateful_step_count=6, deadline=None, database=None,
                                        derandomize=True, suppress_health_check=list(HealthCheck)))
    print(seen)
    followed = {label for label, status in seen if status < 300}
    assert {"POST /conversations", "POST /why", "POST /conversations/{conversation_id}/ask"} <= followed, seen
