"""How a mysql:// URI becomes PyMySQL's connection options: the password from the URI, else
MYSQL_PWD, else an option file (the one the URI names, else ~/.my.cnf); MLflow's
MLFLOW_MYSQL_SSL_* variables over the URI's own ssl options, as MLflow's engine takes them; the
connection always utf8mb4; an unknown option refused with the known ones."""

from __future__ import annotations

import pytest

from etl.verify.connect import mysql_options


@pytest.fixture
def clean(monkeypatch, tmp_path):
    for name in ("MYSQL_PWD", "MLFLOW_MYSQL_SSL_CA", "MLFLOW_MYSQL_SSL_CERT", "MLFLOW_MYSQL_SSL_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.my.cnf unless a test writes one
    return tmp_path


def test_password_from_the_uri_then_mysql_pwd_then_my_cnf(clean, monkeypatch):
    options = mysql_options("mysql+pymysql://me:pw%40x@db.example:3307/mlflow")
    assert (options["user"], options["password"], options["host"], options["port"], options["database"]) == \
        ("me", "pw@x", "db.example", 3307, "mlflow")
    assert options["charset"] == "utf8mb4" and "read_default_file" not in options

    monkeypatch.setenv("MYSQL_PWD", "from-env")
    assert mysql_options("mysql://me@db/mlflow")["password"] == "from-env"
    assert mysql_options("mysql://me:in-uri@db/mlflow")["password"] == "in-uri"

    monkeypatch.delenv("MYSQL_PWD")
    assert "password" not in mysql_options("mysql://me@db/mlflow")
    (clean / ".my.cnf").write_text("[client]\npassword=from-file\n")
    options = mysql_options("mysql://me@db/mlflow")
    assert "password" not in options and options["read_default_file"] == str(clean / ".my.cnf")
    named = mysql_options(f"mysql://me@db/mlflow?read_default_file={clean}/other.cnf")
    assert named["read_default_file"] == f"{clean}/other.cnf"


def test_mlflow_ssl_variables_win_over_the_uri(clean, monkeypatch):
    uri = "mysql://me:pw@db/mlflow?ssl_ca=/uri/ca.pem&ssl_verify_cert=true"
    assert mysql_options(uri)["ssl_ca"] == "/uri/ca.pem" and mysql_options(uri)["ssl_verify_cert"] is True
    monkeypatch.setenv("MLFLOW_MYSQL_SSL_CA", "/env/ca.pem")
    monkeypatch.setenv("MLFLOW_MYSQL_SSL_CERT", "/env/cert.pem")
    monkeypatch.setenv("MLFLOW_MYSQL_SSL_KEY", "/env/key.pem")
    options = mysql_options(uri)
    assert (options["ssl_ca"], options["ssl_cert"], options["ssl_key"]) == ("/env/ca.pem", "/env/cert.pem", "/env/key.pem")


def test_a_narrower_charset_or_an_unknown_option_is_refused(clean):
    assert mysql_options("mysql://me:pw@db/mlflow?charset=utf8mb4")["charset"] == "utf8mb4"
    with pytest.raises(ValueError, match="charset=utf8 cannot carry 4-byte UTF-8"):
        mysql_options("mysql://me:pw@db/mlflow?charset=utf8")
    with pytest.raises(ValueError, match=r"unknown connection option 'sslmode' \(known: .*ssl_ca"):
        mysql_options("mysql://me:pw@db/mlflow?sslmode=require")
