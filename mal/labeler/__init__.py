"""Phase 1, the labeler: box crops, timm encoder + attention decoder, MIL/CRF losses, training, validation."""
