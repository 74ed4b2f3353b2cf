"""Tables from template.yaml for tests; the implementation is ``meterbridge.local.tables``.

Fixtures call ``create_tables(client, {"TenantsTable": "t-tenants", ...})`` so emulated tables
follow the template's own key schemas and indexes.
"""

from meterbridge.local.tables import (
    create_tables,
    default_template_path,
    load_template,
    table_specs,
)

__all__ = ["create_tables", "default_template_path", "load_template", "table_specs"]
