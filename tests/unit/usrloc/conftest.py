from tests.unit.db.dbfixtures import db_url, location_url

__all__ = ["db_url", "location_url"]
