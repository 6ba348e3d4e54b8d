"""The loom: a web app to steer a base model by hand, whose curation is recorded as feedback."""
