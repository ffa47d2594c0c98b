"""Stage compare: the leaderboard, transfer vs scratch, accuracy vs cost."""
