"""Common code of the một cửa dossier tracking services: the event contract, the clock,
the working-time calendar, the procedure catalog, the agency directory, the legal engine
and the messaging port."""
