from tests.unit.db.dbfixtures import db_url

__all__ = ["db_url"]
