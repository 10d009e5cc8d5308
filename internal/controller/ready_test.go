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
	"sync/atomic"
	"testing"
)

// syncedCache says its caches have synced while synced is set.
type syncedCache struct{ synced *atomic.Bool }

func (c syncedCache) WaitForCacheSync(ctx context.Context) bool {
	if c.synced.Load() {
		return true
	}
	<-ctx.Done()
	return false
}

// A replica is not ready while its caches list, and is once they synced;
// an informer started later (the leader's controllers', once this replica
// wins an election) does not make it unready again.
func TestCachesSyncedIsReadyOnlyOnceSynced(t *testing.T) {
	c := syncedCache{synced: &atomic.Bool{}}
	check := CachesSynced(c)
	if err := check(httptest.NewRequest("GET", "/readyz", nil)); err == nil {
		t.Error("ready while the caches have not synced")
	}
	c.synced.Store(true)
	if err := check(httptest.NewRequest("GET", "/readyz", nil)); err != nil {
		t.Errorf("not ready once the caches synced: %v", err)
	}
	c.synced.Store(false) // a new informer, still listing
	if err := check(httptest.NewRequest("GET", "/readyz", nil)); err != nil {
		t.Errorf("not ready again while an informer started later lists: %v", err)
	}
}
