"""Generate and finish: styles, poses, sampling, detailing, restoration, ranking."""
