"""The migrations form one line of history and build exactly the schema the models declare."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from controlplane.app import MIGRATIONS
from controlplane.extensions import db
from controlplane.log_partitions import include_name, include_object_for


def test_there_is_one_head():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_migrated_schema_matches_the_models(sql_app):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"render_as_batch": True, "include_name": include_name,
                                                                   "include_object": include_object_for(connection.dialect.name)})
        differences = [d for d in compare_metadata(context, db.metadata) if not _noise(d)]
    assert differences == []


def _noise(diff) -> bool:
    # alembic_version is Alembic's own table, not one of ours.
    return isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name == "alembic_version"
