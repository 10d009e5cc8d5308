/*
Copyright 2026 The kipam Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controller

import (
	"context"
	"net/http/httptest"
	"testing"
)

// syncedCache says its caches have synced when synced is closed.
type syncedCache struct{ synced chan struct{} }

func (c syncedCache) WaitForCacheSync(ctx context.Context) bool {
	select {
	case <-c.synced:
		return true
	case <-ctx.Done():
		return false
	}
}

// A replica is not ready while its caches list, and is once they synced.
func TestCachesSyncedIsReadyOnlyOnceSynced(t *testing.T) {
	c := syncedCache{synced: make(chan struct{})}
	check := CachesSynced(c)
	if err := check(httptest.NewRequest("GET", "/readyz", nil)); err == nil {
		t.Error("ready while the caches have not synced")
	}
	close(c.synced)
	if err := check(httptest.NewRequest("GET", "/readyz", nil)); err != nil {
		t.Errorf("not ready once the caches synced: %v", err)
	}
}
