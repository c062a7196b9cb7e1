"""Moving points between collections: the partitioned backfill, vector transforms, the
catch-up of live writes, and the record of points skipped on purpose."""
