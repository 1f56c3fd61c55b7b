"""SchemaGen that adds what inference cannot know about ultrasound images."""
