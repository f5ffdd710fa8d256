"""Jobs as clients see them: submit, read, cancel."""
