"""Read paths shared by the console and the admin API: pagination, log filters and export,
dashboard aggregates from rollups. Nothing here writes."""
