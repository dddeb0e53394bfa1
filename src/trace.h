// trace.h: (being written)
#pragma once
