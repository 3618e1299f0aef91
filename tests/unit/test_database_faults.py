"""What each adapter makes of its driver's errors and of the server's settings, without a
server: the batcher retries TRANSIENT, quarantines DATA and stops on anything else."""

from __future__ import annotations

import asyncpg
import pytest

from store.database import dialect_of
from store.database import postgres as pg
from store.database.port import Fault

mysql = pytest.importorskip("store.database.mysql", reason="needs asyncmy (the mysql extra)")
errors = pytest.importorskip("asyncmy.errors")


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (asyncpg.exceptions.StringDataRightTruncationError("too long"), Fault.DATA),
        (asyncpg.exceptions.CharacterNotInRepertoireError("NUL"), Fault.DATA),
        (asyncpg.exceptions.UniqueViolationError("dup"), Fault.DATA),
        (OverflowError("value out of int64 range"), Fault.DATA),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), Fault.TRANSIENT),
        (asyncpg.exceptions.SerializationError("serialize"), Fault.TRANSIENT),
        (asyncpg.exceptions.AdminShutdownError("shutdown"), Fault.TRANSIENT),
        (asyncpg.exceptions.CannotConnectNowError("starting"), Fault.TRANSIENT),
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), Fault.TRANSIENT),
        (ConnectionRefusedError(), Fault.TRANSIENT),
        (TimeoutError(), Fault.TRANSIENT),
        (asyncpg.exceptions.UndefinedTableError("no table"), None),
        (ValueError("a bug of ours"), None),
    ],
)
def test_postgresql_faults(error: BaseException, fault: Fault | None) -> None:
    assert pg.fault(error) is fault


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (errors.DataError(1406, "Data too long for column 'client_order_id'"), Fault.DATA),
        (errors.OperationalError(1264, "Out of range value for column 'quantity'"), Fault.DATA),
        (errors.IntegrityError(1062, "Duplicate entry"), Fault.DATA),
        (errors.OperationalError(1366, "Incorrect string value"), Fault.DATA),
        (errors.OperationalError(1213, "Deadlock found"), Fault.TRANSIENT),
        (errors.OperationalError(1205, "Lock wait timeout exceeded"), Fault.TRANSIENT),
        (errors.OperationalError(2013, "Lost connection to server during query"), Fault.TRANSIENT),
        (errors.OperationalError(2003, "Can't connect"), Fault.TRANSIENT),
        (errors.OperationalError(1927, "Connection was killed"), Fault.TRANSIENT),
        (errors.InterfaceError(0, ""), Fault.TRANSIENT),
        (ConnectionResetError(), Fault.TRANSIENT),
        (errors.ProgrammingError(1064, "You have an error in your SQL syntax"), None),
        (errors.ProgrammingError(1146, "Table doesn't exist"), None),
    ],
)
def test_mysql_faults(error: BaseException, fault: Fault | None) -> None:
    assert mysql.fault(error) is fault


GOOD = {
    "version": "10.11.19-MariaDB-0+deb12u1",
    "log_bin": 0,
    "binlog_format": "MIXED",
    "isolation": "READ-COMMITTED",
    "sql_mode": mysql.SQL_MODE,
}


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({}, None),
        ({"version": "8.0.36"}, None),
        ({"version": "8.4.3"}, None),
        ({"version": "10.5.22-MariaDB"}, "MariaDB 10.5.22-MariaDB: Spot needs 10.6.0"),
        ({"version": "8.0.18"}, "MySQL 8.0.18: Spot needs 8.0.19"),
        ({"log_bin": 1, "binlog_format": "STATEMENT"}, "binlog_format is STATEMENT"),
        ({"log_bin": 0, "binlog_format": "STATEMENT"}, None),  # no binary log kept
        ({"log_bin": 1, "binlog_format": "ROW"}, None),
        ({"isolation": "REPEATABLE-READ"}, "not READ COMMITTED"),
        ({"sql_mode": "NO_ENGINE_SUBSTITUTION"}, "not strict"),
    ],
)
def test_mysql_settings_are_named(changed: dict, named: str | None) -> None:
    found = mysql.settings_problems(GOOD | changed, {"orders": "InnoDB"})
    if named is None:
        assert found == []
    else:
        assert len(found) == 1 and named in found[0], found


def test_a_table_without_transactions_is_named() -> None:
    found = mysql.settings_problems(GOOD, {"orders": "InnoDB", "balances": "MyISAM"})
    assert found == [
        "table balances is MyISAM, not InnoDB: a flush would not be one transaction; "
        "ALTER TABLE balances ENGINE=InnoDB"
    ]


def test_portable_queries_are_rewritten_for_mysql() -> None:
    q = mysql.Portable("SELECT a FROM t WHERE u = $1 AND s LIKE 'x%' LIMIT $2 UNION SELECT $1")
    assert q.text == "SELECT a FROM t WHERE u = %s AND s LIKE 'x%%' LIMIT %s UNION SELECT %s"
    assert q.args(["alice", 10]) == ("alice", 10, "alice")
    plain = mysql.Portable("SELECT 1 WHERE 'a%' = 'a%'")
    assert (plain.text, plain.args([])) == ("SELECT 1 WHERE 'a%' = 'a%'", None)


def test_upserts_name_the_proposed_row_as_each_server_spells_it() -> None:
    assignments = "available = available + new.available"
    mariadb = mysql.Dialect(mariadb=True, max_statement=1 << 20).upsert(
        "b", ("available",), assignments
    )
    mysql8 = mysql.Dialect(mariadb=False, max_statement=1 << 20).upsert(
        "b", ("available",), assignments
    )
    assert mariadb[1] == " ON DUPLICATE KEY UPDATE available = available + VALUES(available)"
    assert mysql8[1] == " AS new ON DUPLICATE KEY UPDATE available = available + new.available"


@pytest.mark.parametrize(
    ("url", "dialect"),
    [("postgresql://u@h/db", "postgresql"), ("postgres://h/db", "postgresql"),
     ("mysql://root@127.0.0.1:3306/spot", "mysql"), ("mariadb://h/db", "mysql"),
     ("mysql+asyncmy://h/db", "mysql")],
)  # fmt: skip
def test_the_scheme_picks_the_adapter(url: str, dialect: str) -> None:
    assert dialect_of(url) == dialect


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="use postgresql:// or mysql://"):
        dialect_of("sqlite:///spot.db")


def test_mysql_urls() -> None:
    assert mysql.connect_options("mysql://u:p%40ss@db.example:3307/spot") == {
        "host": "db.example", "port": 3307, "user": "u", "password": "p@ss",
        "charset": "utf8mb4", "database": "spot",
    }  # fmt: skip
    with pytest.raises(ValueError, match="no URL options"):
        mysql.connect_options("mysql://root@h/spot?ssl=true")
