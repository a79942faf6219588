"""Model monitoring: sketches, reference profiles, drift, shadow comparison, A/B
verdicts and the prediction log. Nothing here is on the request path except
``PredictionLog.record`` and the sketch ``add`` calls, which only append."""
