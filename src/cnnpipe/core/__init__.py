"""What every stage shares: errors, atomic file formats, output paths, the stage runner."""
