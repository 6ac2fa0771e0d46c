"""The data engine's storage: SQLAlchemy models (:mod:`.models`), opening and migrating a database
(:mod:`.db`), image files under a confined root (:mod:`.images`) and annotation changes with
optimistic concurrency and undo (:mod:`.annotations`)."""
