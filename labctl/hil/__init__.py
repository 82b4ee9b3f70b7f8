"""Hardware in the loop: refine the twin from bench frames, train with the bench in the forward pass."""
