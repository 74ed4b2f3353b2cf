"""The modules meterbridge loads on first use, declared in one place.

A handler's cold start pays for every module its init imports, so the few heavy ones that only
some requests (or only some functions) use are bound at module level to a ``LazyLoader``, which
imports the real module the first time an attribute is read (Powertools does the same for the
X-Ray SDK: ``aws_lambda_powertools/shared/lazy_import.py``). Everything else is imported at the
top of its module. ``tests/unit/project/test_cold_start_imports.py`` holds both sides: no
import inside a function body outside the modules it lists as pending, and no lazy module
loaded by a handler's init.

    from meterbridge.runtime.lazy import LazyLoader

    httpx = LazyLoader("httpx", globals(), "httpx")
"""

import importlib
import types
from typing import Any

# The only modules bound lazily, and why each is not worth its import at init.
LAZY_MODULES: dict[str, str] = {
    "botocore.session": "the AWS SDK: the first request builds the one client it needs",
    "botocore.config": "built with the client",
    "botocore.exceptions": "only ever needed once a client has raised",
    "aws_lambda_powertools.utilities.parameters": "SSM secrets, where one is named; loads boto3",
    "httpx": "the OpenMeter client: the flush only",
    "stripe": "the Stripe SDK: the webhook and the admin lifecycle routes only",
    "nats": "the NATS client: the publisher, only where NATS_ENABLED",
    "nats.js.api": "the publisher's stream set-up",
    "nats.js.errors": "the publisher's stream set-up",
    "meterbridge.logic.billing.reconcile": "the reconcile route only",
    "meterbridge.logic.tenants.lifecycle": "the admin lifecycle routes: Stripe, billing, NATS",
    "meterbridge.logic.tenants.provisioning": "the admin provisioning route: Stripe, NATS",
    "meterbridge.adapters.openmeter_api": "the usage history route only: OpenMeter's client",
    "meterbridge.logic.billing.overage": "the usage report's next invoice: GET /v1/usage only",
}


class LazyLoader(types.ModuleType):
    """A module imported on first attribute access, then put in place of this stand-in.

    ``local_name`` in ``parent_module_globals`` is rebound to the real module on first use; a
    reference kept elsewhere keeps working (its ``__dict__`` is filled from the module's).
    Only names declared in ``LAZY_MODULES`` are accepted, so the list stays the whole list.
    """

    def __init__(self, local_name: str, parent_module_globals: dict[str, Any], name: str) -> None:
        if name not in LAZY_MODULES:
            raise ValueError(f"{name} is not declared in meterbridge.runtime.lazy.LAZY_MODULES")
        self._local_name = local_name
        self._parent_module_globals = parent_module_globals
        super().__init__(name)

    def _load(self) -> types.ModuleType:
        module = importlib.import_module(self.__name__)
        self._parent_module_globals[self._local_name] = module
        self.__dict__.update(module.__dict__)
        return module

    def __getattr__(self, item: str) -> Any:
        return getattr(self._load(), item)

    def __dir__(self) -> list[str]:
        return dir(self._load())
