"""Tables of the meter's usage rollups (declared on zeroserve.db.Base)."""
