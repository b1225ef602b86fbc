"""Phase 2, pseudo-labels: a mask for every box (labelling, shards, the user CLI) and mask quality vs GT."""
