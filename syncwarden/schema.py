"""The complete database schema: importing this module registers every room's tables.

Alembic's autogenerate and the drift test read ``metadata`` from here, so a model module that is
not imported here is invisible to migrations: add new model modules to the import list.
"""

from syncwarden import job_runs  # noqa: F401  (registers job_runs)
from syncwarden.bot import card_posts, conversations  # noqa: F401  (conversation_refs, card_*)
from syncwarden.connectors.scheduling import (  # noqa: F401  (scheduling_*, ics_feed_cache)
    builtin,
    builtin_appointments,
    ics_source,
)
from syncwarden.core.db import Base
from syncwarden.scim import records as scim_records  # noqa: F401  (scim_users, scim_tokens)
from syncwarden.sync import (
    credential_watch,  # noqa: F401  (registers credential_alerts)
    reconcile_records,  # noqa: F401  (reconciliation mirror, drift)
)
from syncwarden.sync import records as sync_records  # noqa: F401  (registers sync_* tables)
from syncwarden.sync import subscriptions as sync_subscriptions  # noqa: F401  (sync_subscriptions)
from syncwarden.workflows import (  # noqa: F401  (registers their tables)
    audit,
    outbox,
    records,
    review_records,
)

metadata = Base.metadata
