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

package v1alpha1

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kipam/kipam/internal/ipam"
)

// answer is what a webhook tells the API server for err. kipam's own
// answers (a refusal, an Invalid field, AlreadyExists, a 429 for a busy
// pool) are API status errors that kipam built, and go as they are.
// Anything else is a failure to decide (an API read that failed or timed
// out, a cancelled context, the API server down) and becomes a 500, or a
// 429 when the API server itself said 429: retryable, so that clients try
// again. controller-runtime answers a plain error with 403 Forbidden,
// which clients take as final; a wrapped API error it answers with the
// inner status alone, so that a read kipam was refused would pass for
// kipam refusing the request.
func answer(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(apierrors.APIStatus); ok { //nolint:errorlint // only kipam's own answer, not one wrapped in an explanation
		return err
	}
	if bad := (*ipam.BadLineError)(nil); errors.As(err, &bad) {
		// Retrying does not repair it: not a 500.
		return apierrors.NewServiceUnavailable(fmt.Sprintf("%v; kipam serves nothing from the pool until a person repairs that line "+
			"(docs/operations.md, \"A ledger line kipam cannot read\")", err))
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Code == http.StatusTooManyRequests {
		return apierrors.NewTooManyRequests(fmt.Sprintf("%v; retry", err), 1)
	}
	return apierrors.NewInternalError(fmt.Errorf("%w; the request may be retried", err))
}

// retryableDefaulter gives a Defaulter's errors as answer does.
type retryableDefaulter[T runtime.Object] struct{ admission.Defaulter[T] }

func (d retryableDefaulter[T]) Default(ctx context.Context, obj T) error {
	return answer(d.Defaulter.Default(ctx, obj))
}

// retryableValidator gives a Validator's errors as answer does.
type retryableValidator[T runtime.Object] struct{ admission.Validator[T] }

func (v retryableValidator[T]) ValidateCreate(ctx context.Context, obj T) (admission.Warnings, error) {
	w, err := v.Validator.ValidateCreate(ctx, obj)
	return w, answer(err)
}

func (v retryableValidator[T]) ValidateUpdate(ctx context.Context, old, obj T) (admission.Warnings, error) {
	w, err := v.Validator.ValidateUpdate(ctx, old, obj)
	return w, answer(err)
}

func (v retryableValidator[T]) ValidateDelete(ctx context.Context, obj T) (admission.Warnings, error) {
	w, err := v.Validator.ValidateDelete(ctx, obj)
	return w, answer(err)
}

// defaulter and validator are how every kipam webhook is registered, so
// that none answers a transient failure with a final 403.
func defaulter[T runtime.Object](d admission.Defaulter[T]) admission.Defaulter[T] {
	return retryableDefaulter[T]{d}
}

func validator[T runtime.Object](v admission.Validator[T]) admission.Validator[T] {
	return retryableValidator[T]{v}
}
