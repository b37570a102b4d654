"""Model servers: the embedded CPU model, vLLM launchers, and routing across replicas."""
