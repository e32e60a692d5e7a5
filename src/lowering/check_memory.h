// An independent check of a lowered Program's memory plan, used by tests: recomputes every
// arena value's live range from the instructions and reports two values that are live at
// the same time and share bytes, unless one dies at the very elementwise instruction that
// defines the other (a legal in-place reuse).
#pragma once

#include <string>

#include "lowering/program.h"

namespace tg {

// Empty when the plan is sound; otherwise a description of the first conflict.
std::string CheckProgramMemory(const Program& program);

}  // namespace tg
