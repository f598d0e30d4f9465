"""The daily loop: score the universe (Ray Data), retrain with a gate, promote or keep, replay, monitor."""
