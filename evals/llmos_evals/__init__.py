"""llmos_evals: adapters that put llmos under outside evaluations (AgentDojo). Never imported by the runtime."""
