"""Tables from template.yaml for tests; the implementation is ``meterbridge_dev.stack.tables``.

Fixtures call ``create_tables(client, {"TenantsTable": "t-tenants", ...})`` so emulated tables
follow the template's own key schemas and indexes.
"""

from meterbridge_dev.stack.tables import (
    create_tables,
    default_template_path,
    load_template,
    table_specs,
)

__all__ = ["create_tables", "default_template_path", "load_template", "table_specs"]
