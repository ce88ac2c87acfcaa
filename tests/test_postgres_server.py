"""The throwaway PostgreSQL server fixture (tests/postgres_server.py) that the shared-storage tests use."""

from __future__ import annotations

from postgres_server import postgres_server  # noqa: F401  (the fixture)


def test_server_serves_a_fresh_database(postgres_server):  # noqa: F811
    import sqlalchemy

    url = postgres_server.create_database("fixture_check")
    assert url.endswith(f":{postgres_server.port}/fixture_check")
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE t (x int)"))
            connection.execute(sqlalchemy.text("INSERT INTO t VALUES (1), (2)"))
            total = connection.execute(sqlalchemy.text("SELECT sum(x) FROM t")).scalar()
    finally:
        engine.dispose()
    assert total == 3
    assert "127.0.0.1" in url and postgres_server.data_dir.exists()
