"""Every command opens the store, which migrates it when it is behind: whether it is at the
head is told without alembic (`storage.db.at_head`, the migration files' text and the
database's version row), so alembic is loaded only to migrate. The head read off the text
is alembic's own."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from storage.db import alembic_config, at_head, current_revision, head_revision, make_engine


def test_when_the_migrations_are_read_as_text_then_their_head_is_alembics(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        script = ScriptDirectory.from_config(alembic_config(engine))
        assert script.get_heads() == [head_revision()]
    finally:
        engine.dispose()


def test_when_a_database_is_new_behind_or_at_the_head_then_at_head_says_so(tmp_path):
    from storage.db import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert current_revision(engine) is None and not at_head(engine)
        script = ScriptDirectory.from_config(alembic_config(engine))
        previous = script.get_revision(head_revision()).down_revision
        upgrade(engine, previous)
        assert current_revision(engine) == previous and not at_head(engine)
        upgrade(engine)
        assert current_revision(engine) == head_revision() and at_head(engine)
        upgrade(engine)  # at the head: nothing to do, nothing loaded
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
