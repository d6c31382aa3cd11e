package cluster

import "go.uber.org/zap"

// nopZap silences the etcd client's own logging: the cluster reports what
// matters through its slog.Logger.
func nopZap() *zap.Logger { return zap.NewNop() }
