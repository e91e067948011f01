"""Table statistics for SQLite's query planner.

SQLite chooses among indexes by what it knows of the data, and without statistics it knows
nothing: every index whose first column a query pins looks alike. For `status` it then read a
person's enrollment through an index on ``active`` (all 10,000 active rows, filtered one by one)
instead of the one on ``subject_id``, and a `status` turn cost twice what it does on
PostgreSQL, whose autovacuum keeps its statistics itself. SQLite keeps none unless asked
(``ANALYZE``, https://sqlite.org/lang_analyze.html). The service asks when it starts and once a
day (``database.statistics``), with a bound on the rows read per index
(``PRAGMA analysis_limit``, https://sqlite.org/pragma.html#pragma_analysis_limit) so that a large
file costs milliseconds, not a scan of every table.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Rows read per index: enough to tell a near-unique key from a two-valued flag, which is all
# the planner needs from these statistics.
ROWS_READ_PER_INDEX = 1000


async def refresh_planner_statistics(engine: AsyncEngine) -> bool:
    """Gather SQLite's planner statistics; False (doing nothing) on another database."""
    if engine.dialect.name != "sqlite":
        return False
    async with engine.connect() as connection:
        await connection.exec_driver_sql(f"PRAGMA analysis_limit={ROWS_READ_PER_INDEX}")
        await connection.execute(text("ANALYZE"))
        await connection.commit()
    return True
