"""Tables of jobs kept through SQLAlchemy, if any (declared on zeroserve.db.Base)."""
