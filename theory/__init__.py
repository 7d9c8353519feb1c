"""What could exist: parameter spaces, benchmark models, simulators and active learning."""
