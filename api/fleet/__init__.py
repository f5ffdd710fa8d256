"""Fleet management: the pools the manager runs, its scaling decisions and its lease."""
