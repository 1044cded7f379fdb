"""Source → slug: safe extraction, stack detection, the builder, the artifact store, git push."""
