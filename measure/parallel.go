package measure

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
)

// Outcome is the result of measuring one path with [Files].
type Outcome struct {
	Result
	Err error
}

// Files measures every path with up to workers files in flight (all cores
// when workers <= 0) and returns the outcomes in the order of paths.
// It stops early, marking the rest with the context's error, when ctx ends.
func Files(ctx context.Context, paths []string, workers int) []Outcome {
	return FilesWith(ctx, paths, Options{Workers: workers})
}

// FilesWith is [Files] within the budgets of o, with up to o.Workers files
// in flight.
func FilesWith(ctx context.Context, paths []string, o Options) []Outcome {
	out := make([]Outcome, len(paths))
	forEach(ctx, len(paths), o.Workers, func(i int) {
		r, err := FileWith(ctx, paths[i], o)
		if err != nil {
			out[i] = Outcome{Result: Result{Path: paths[i]}, Err: err}
			return
		}
		out[i] = Outcome{Result: r}
	})
	for i := range out {
		if out[i].Path == "" && out[i].Err == nil {
			out[i] = Outcome{Result: Result{Path: paths[i]}, Err: ctx.Err()}
		}
	}
	return out
}

// forEach runs fn(0..n-1) on a bounded pool. Every goroutine it starts has
// returned when it returns.
func forEach(ctx context.Context, n, workers int, fn func(i int)) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if workers > n {
		workers = n
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}
