package main

import "github.com/parleychat/parley/cmd/internal/stats"

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return stats.Round3(a / b)
}
