"""Every PartitionsDefinition of HMS, named once."""

import os

import dagster as dg

TIERS_START_DATE = os.environ.get("HMS_TIERS_START_DATE", "2026-01-01")

# Daily tier migrations; end_offset=1 makes today a partition too, for early migrations.
daily_partitions = dg.DailyPartitionsDefinition(start_date=TIERS_START_DATE, end_offset=1)
